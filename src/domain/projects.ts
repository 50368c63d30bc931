import type pg from 'pg';
import { z } from 'zod';
import { CofferError } from '../core/errors';
import { bigintId, int4, jsonObject, text } from './input';

export { parseInput } from './input';

export const projectInput = z.object({
  name: text(500).min(1),
  tags: z.array(text(200)).max(100).default([]),
  settings: jsonObject.default({}),
  status: z.enum(['draft', 'active', 'archived']).default('draft'),
});

export const noteInput = z.object({
  title: text(1000).min(1),
  body: text(1_000_000).default(''),
  parent_id: bigintId.nullable().default(null),
  position: int4.default(0),
});

// numeric stays text end to end, so no precision is lost in JavaScript. 1,000 digits either side of the
// point is far beyond any score and far below PostgreSQL's numeric limits.
const DECIMAL_RE = /^-?\d{1,1000}(\.\d{1,1000})?$/;

export const findingInput = z.object({
  title: text(1000).min(1),
  description: text(1_000_000).default(''),
  score: z.union([z.string().max(2002).regex(DECIMAL_RE, 'must be a decimal number of at most 1000 digits either side of the point'), z.number().finite()]).default('0'),
  confidence: z.number().min(0).max(1).nullable().default(null),
  reference_code: text(100).min(1).nullable().default(null),
  data: jsonObject.default({}),
});

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function checkUuid(id: string, what: string): string {
  if (!UUID_RE.test(id)) throw new CofferError('E_NOT_FOUND', `no ${what} '${id}'`);
  return id;
}

export function checkBigintId(id: string, what: string): string {
  if (!/^\d{1,18}$/.test(id)) throw new CofferError('E_NOT_FOUND', `no ${what} '${id}'`);
  return id;
}

function one<T>(rows: T[], what: string, id: string): T {
  if (!rows[0]) throw new CofferError('E_NOT_FOUND', `no ${what} '${id}'`);
  return rows[0];
}

export async function createProject(db: pg.Pool, ownerId: string, input: z.infer<typeof projectInput>) {
  const res = await db.query(
    `INSERT INTO projects (name, tags, settings, status, owner_id) VALUES ($1, $2, $3, $4, $5) RETURNING *`,
    [input.name, input.tags, JSON.stringify(input.settings), input.status, ownerId],
  );
  return res.rows[0];
}

export async function listProjects(db: pg.Pool) {
  return (await db.query(`SELECT * FROM projects ORDER BY created_at, id LIMIT 1000`)).rows;
}

export async function getProject(db: pg.Pool, id: string) {
  return one((await db.query(`SELECT * FROM projects WHERE id = $1`, [checkUuid(id, 'project')])).rows, 'project', id);
}

/** Deletes the project and returns the storage paths of its uploads, for the caller to remove. */
export async function deleteProject(db: pg.Pool, id: string): Promise<string[]> {
  checkUuid(id, 'project');
  const files = await db.query<{ storage_path: string }>(`SELECT storage_path FROM uploaded_files WHERE project_id = $1`, [id]);
  const res = await db.query(`DELETE FROM projects WHERE id = $1`, [id]);
  if (res.rowCount === 0) throw new CofferError('E_NOT_FOUND', `no project '${id}'`);
  return files.rows.map((r) => r.storage_path);
}

export async function createNote(db: pg.Pool, projectId: string, input: z.infer<typeof noteInput>) {
  await getProject(db, projectId);
  try {
    const res = await db.query(
      `INSERT INTO notes (project_id, parent_id, title, body, position) VALUES ($1, $2, $3, $4, $5) RETURNING *`,
      [projectId, input.parent_id, input.title, input.body, input.position],
    );
    return res.rows[0];
  } catch (err) {
    if ((err as { code?: string }).code === '23503') throw new CofferError('E_VALIDATION', `parent note '${input.parent_id}' does not exist`);
    throw err;
  }
}

export async function listNotes(db: pg.Pool, projectId: string) {
  return (await db.query(`SELECT * FROM notes WHERE project_id = $1 ORDER BY id`, [checkUuid(projectId, 'project')])).rows;
}

export async function getNote(db: pg.Pool, projectId: string, id: string) {
  const rows = (await db.query(`SELECT * FROM notes WHERE project_id = $1 AND id = $2`, [checkUuid(projectId, 'project'), checkBigintId(id, 'note')])).rows;
  return one(rows, 'note', id);
}

export async function deleteNote(db: pg.Pool, projectId: string, id: string): Promise<void> {
  const res = await db.query(`DELETE FROM notes WHERE project_id = $1 AND id = $2`, [checkUuid(projectId, 'project'), checkBigintId(id, 'note')]);
  if (res.rowCount === 0) throw new CofferError('E_NOT_FOUND', `no note '${id}'`);
}

export async function createFinding(db: pg.Pool, projectId: string, input: z.infer<typeof findingInput>) {
  await getProject(db, projectId);
  try {
    const res = await db.query(
      `INSERT INTO findings (project_id, title, description, score, confidence, reference_code, data)
       VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
      [projectId, input.title, input.description, String(input.score), input.confidence, input.reference_code, JSON.stringify(input.data)],
    );
    return res.rows[0];
  } catch (err) {
    if ((err as { code?: string }).code === '23505') throw new CofferError('E_CONFLICT', `reference code '${input.reference_code}' is already used in this project`);
    throw err;
  }
}

export async function listFindings(db: pg.Pool, projectId: string) {
  return (await db.query(`SELECT * FROM findings WHERE project_id = $1 ORDER BY id`, [checkUuid(projectId, 'project')])).rows;
}

export async function getFinding(db: pg.Pool, projectId: string, id: string) {
  const rows = (await db.query(`SELECT * FROM findings WHERE project_id = $1 AND id = $2`, [checkUuid(projectId, 'project'), checkBigintId(id, 'finding')])).rows;
  return one(rows, 'finding', id);
}

export async function deleteFinding(db: pg.Pool, projectId: string, id: string): Promise<void> {
  const res = await db.query(`DELETE FROM findings WHERE project_id = $1 AND id = $2`, [checkUuid(projectId, 'project'), checkBigintId(id, 'finding')]);
  if (res.rowCount === 0) throw new CofferError('E_NOT_FOUND', `no finding '${id}'`);
}

export async function recordUpload(
  db: pg.Pool,
  row: { projectId: string; kind: string; name: string; storagePath: string; contentType: string; size: number; sha256: Buffer; createdBy: string },
) {
  const res = await db.query(
    `INSERT INTO uploaded_files (project_id, kind, name, storage_path, content_type, size, sha256, created_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     RETURNING id, project_id, kind, name, content_type, size, encode(sha256, 'hex') AS sha256, created_at`,
    [row.projectId, row.kind, row.name, row.storagePath, row.contentType, row.size, row.sha256, row.createdBy],
  );
  return res.rows[0];
}

export async function listUploads(db: pg.Pool, projectId: string) {
  const res = await db.query(
    `SELECT id, project_id, kind, name, content_type, size, encode(sha256, 'hex') AS sha256, created_at
       FROM uploaded_files WHERE project_id = $1 ORDER BY created_at, id`,
    [checkUuid(projectId, 'project')],
  );
  return res.rows;
}

export async function getUpload(db: pg.Pool, projectId: string, id: string) {
  const res = await db.query(`SELECT * FROM uploaded_files WHERE project_id = $1 AND id = $2`, [checkUuid(projectId, 'project'), checkUuid(id, 'upload')]);
  return one(res.rows, 'upload', id);
}
