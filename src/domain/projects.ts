import type pg from 'pg';
import { z } from 'zod';
import { CofferError } from '../core/errors';
import { authorizeProject, domainActor, notFound, visibleProjectsCondition, type Actor } from './access';
import { bigintId, int4, jsonObject, text } from './input';

export { parseInput } from './input';

export const PROJECT_STATUSES = ['draft', 'active', 'archived'] as const;

export const projectInput = z.object({
  name: text(500).min(1),
  tags: z.array(text(200)).max(100).default([]),
  settings: jsonObject.default({}),
  status: z.enum(PROJECT_STATUSES).default('draft'),
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

/** Names a user to add to a project: `{"username": "bob"}` or `{"user_id": "42"}`. */
export const memberInput = z
  .object({ username: text(150).min(1).optional(), user_id: bigintId.optional() })
  .refine((v) => (v.username === undefined) !== (v.user_id === undefined), 'give exactly one of username and user_id')
  .describe('exactly one of username and user_id');

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

/** A well-formed project id the actor may act on, or the 401/403/404 that says why not. */
async function projectFor(db: pg.Pool, actor: Actor | undefined, id: string, action: Parameters<typeof authorizeProject>[3]): Promise<string> {
  if (!UUID_RE.test(id)) {
    domainActor(actor);
    throw notFound(id);
  }
  await authorizeProject(db, actor, id, action);
  return id;
}

function pgCode(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

export async function createProject(db: pg.Pool, actorIn: Actor | undefined, input: z.infer<typeof projectInput>) {
  const actor = domainActor(actorIn);
  const res = await db.query(
    `INSERT INTO projects (name, tags, settings, status, owner_id) VALUES ($1, $2, $3, $4, $5) RETURNING *`,
    [input.name, input.tags, JSON.stringify(input.settings), input.status, actor.id],
  );
  return res.rows[0];
}

/** The projects the actor may see: their own and those they are a member of (every one for superusers). */
export async function listProjects(db: pg.Pool, actorIn: Actor | undefined) {
  const visible = visibleProjectsCondition(domainActor(actorIn), 1);
  return (await db.query(`SELECT p.* FROM projects p WHERE ${visible.sql} ORDER BY p.created_at, p.id LIMIT 1000`, visible.params)).rows;
}

export async function getProject(db: pg.Pool, actor: Actor | undefined, id: string) {
  await projectFor(db, actor, id, 'view');
  return one((await db.query(`SELECT * FROM projects WHERE id = $1`, [id])).rows, 'project', id);
}

/** Deletes the project and returns the storage paths of its uploads, for the caller to remove. */
export async function deleteProject(db: pg.Pool, actor: Actor | undefined, id: string): Promise<string[]> {
  await projectFor(db, actor, id, 'delete');
  const files = await db.query<{ storage_path: string }>(`SELECT storage_path FROM uploaded_files WHERE project_id = $1`, [id]);
  const res = await db.query(`DELETE FROM projects WHERE id = $1`, [id]);
  if (res.rowCount === 0) throw notFound(id);
  return files.rows.map((r) => r.storage_path);
}

export async function createNote(db: pg.Pool, actor: Actor | undefined, projectId: string, input: z.infer<typeof noteInput>) {
  await projectFor(db, actor, projectId, 'edit');
  const parentMissing = () => new CofferError('E_VALIDATION', `parent note '${input.parent_id}' does not exist in this project`);
  try {
    // The parent must be a note of the same project: a note of another project is "not there".
    const res = await db.query(
      `INSERT INTO notes (project_id, parent_id, title, body, position)
       SELECT $1::uuid, $2::bigint, $3::text, $4::text, $5::integer
        WHERE $2::bigint IS NULL OR EXISTS (SELECT 1 FROM notes WHERE id = $2::bigint AND project_id = $1::uuid)
       RETURNING *`,
      [projectId, input.parent_id === null ? null : String(input.parent_id), input.title, input.body, input.position],
    );
    if (!res.rows[0]) throw parentMissing();
    return res.rows[0];
  } catch (err) {
    // A parent or the project deleted between the check and the insert.
    if (pgCode(err) === '23503') throw (err as { constraint?: string }).constraint === 'notes_parent_id_fkey' ? parentMissing() : notFound(projectId);
    throw err;
  }
}

export async function listNotes(db: pg.Pool, actor: Actor | undefined, projectId: string) {
  await projectFor(db, actor, projectId, 'view');
  return (await db.query(`SELECT * FROM notes WHERE project_id = $1 ORDER BY id`, [projectId])).rows;
}

export async function getNote(db: pg.Pool, actor: Actor | undefined, projectId: string, id: string) {
  await projectFor(db, actor, projectId, 'view');
  const rows = (await db.query(`SELECT * FROM notes WHERE project_id = $1 AND id = $2`, [projectId, checkBigintId(id, 'note')])).rows;
  return one(rows, 'note', id);
}

export async function deleteNote(db: pg.Pool, actor: Actor | undefined, projectId: string, id: string): Promise<void> {
  await projectFor(db, actor, projectId, 'edit');
  const res = await db.query(`DELETE FROM notes WHERE project_id = $1 AND id = $2`, [projectId, checkBigintId(id, 'note')]);
  if (res.rowCount === 0) throw new CofferError('E_NOT_FOUND', `no note '${id}'`);
}

export async function createFinding(db: pg.Pool, actor: Actor | undefined, projectId: string, input: z.infer<typeof findingInput>) {
  await projectFor(db, actor, projectId, 'edit');
  try {
    const res = await db.query(
      `INSERT INTO findings (project_id, title, description, score, confidence, reference_code, data)
       VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
      [projectId, input.title, input.description, String(input.score), input.confidence, input.reference_code, JSON.stringify(input.data)],
    );
    return res.rows[0];
  } catch (err) {
    if (pgCode(err) === '23505') throw new CofferError('E_CONFLICT', `reference code '${input.reference_code}' is already used in this project`);
    if (pgCode(err) === '23503') throw notFound(projectId);
    throw err;
  }
}

export async function listFindings(db: pg.Pool, actor: Actor | undefined, projectId: string) {
  await projectFor(db, actor, projectId, 'view');
  return (await db.query(`SELECT * FROM findings WHERE project_id = $1 ORDER BY id`, [projectId])).rows;
}

export async function getFinding(db: pg.Pool, actor: Actor | undefined, projectId: string, id: string) {
  await projectFor(db, actor, projectId, 'view');
  const rows = (await db.query(`SELECT * FROM findings WHERE project_id = $1 AND id = $2`, [projectId, checkBigintId(id, 'finding')])).rows;
  return one(rows, 'finding', id);
}

export async function deleteFinding(db: pg.Pool, actor: Actor | undefined, projectId: string, id: string): Promise<void> {
  await projectFor(db, actor, projectId, 'edit');
  const res = await db.query(`DELETE FROM findings WHERE project_id = $1 AND id = $2`, [projectId, checkBigintId(id, 'finding')]);
  if (res.rowCount === 0) throw new CofferError('E_NOT_FOUND', `no finding '${id}'`);
}

/** Checks, before a byte of an upload is received, that the actor may add uploads to the project. */
export async function authorizeUpload(db: pg.Pool, actor: Actor | undefined, projectId: string): Promise<void> {
  await projectFor(db, actor, projectId, 'edit');
}

export async function recordUpload(
  db: pg.Pool,
  actor: Actor | undefined,
  row: { projectId: string; kind: string; name: string; storagePath: string; contentType: string; size: number; sha256: Buffer },
) {
  // Asked again: an upload can take long enough for a membership to end meanwhile.
  const by = domainActor(actor);
  await projectFor(db, actor, row.projectId, 'edit');
  try {
    const res = await db.query(
      `INSERT INTO uploaded_files (project_id, kind, name, storage_path, content_type, size, sha256, created_by)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
       RETURNING id, project_id, kind, name, content_type, size, encode(sha256, 'hex') AS sha256, created_at`,
      [row.projectId, row.kind, row.name, row.storagePath, row.contentType, row.size, row.sha256, by.id],
    );
    return res.rows[0];
  } catch (err) {
    if (pgCode(err) === '23503') throw notFound(row.projectId);
    throw err;
  }
}

export async function listUploads(db: pg.Pool, actor: Actor | undefined, projectId: string) {
  await projectFor(db, actor, projectId, 'view');
  const res = await db.query(
    `SELECT id, project_id, kind, name, content_type, size, encode(sha256, 'hex') AS sha256, created_at
       FROM uploaded_files WHERE project_id = $1 ORDER BY created_at, id`,
    [projectId],
  );
  return res.rows;
}

export async function getUpload(db: pg.Pool, actor: Actor | undefined, projectId: string, id: string) {
  await projectFor(db, actor, projectId, 'view');
  const res = await db.query(`SELECT * FROM uploaded_files WHERE project_id = $1 AND id = $2`, [projectId, checkUuid(id, 'upload')]);
  return one(res.rows, 'upload', id);
}

/** The owner (first, role "owner") and the members of a project, in the order they were added. */
export async function listMembers(db: pg.Pool, actor: Actor | undefined, projectId: string) {
  await projectFor(db, actor, projectId, 'view');
  const owner = await db.query(
    `SELECT u.id AS user_id, u.username, 'owner' AS role, NULL::timestamptz AS added_at, NULL::bigint AS added_by
       FROM projects p JOIN users u ON u.id = p.owner_id WHERE p.id = $1`,
    [projectId],
  );
  const members = await db.query(
    `SELECT u.id AS user_id, u.username, 'member' AS role, m.added_at, m.added_by
       FROM project_members m JOIN users u ON u.id = m.user_id
      WHERE m.project_id = $1 ORDER BY m.added_at, u.id`,
    [projectId],
  );
  return [...owner.rows, ...members.rows];
}

/**
 * Adds a member. Only active regular users and superusers can be members: system users and deactivated
 * accounts are answered like unknown names, so the endpoint does not list who the system users are.
 */
export async function addMember(db: pg.Pool, actorIn: Actor | undefined, projectId: string, input: z.infer<typeof memberInput>) {
  const actor = domainActor(actorIn);
  await projectFor(db, actor, projectId, 'manage-members');
  const named = input.username !== undefined ? `user '${input.username}'` : `user id ${input.user_id}`;
  const user = await db.query<{ id: string; username: string; is_owner: boolean }>(
    `SELECT u.id, u.username, u.id = (SELECT owner_id FROM projects WHERE id = $3::uuid) AS is_owner
       FROM users u
      WHERE (u.username = $1::text OR u.id = $2::bigint) AND u.is_active AND NOT u.is_system_user`,
    [input.username ?? null, input.user_id === undefined ? null : String(input.user_id), projectId],
  );
  const target = user.rows[0];
  if (!target) throw new CofferError('E_NOT_FOUND', `no active ${named} who can be a project member`);
  if (target.is_owner) throw new CofferError('E_CONFLICT', `${target.username} owns this project`);
  try {
    const res = await db.query(
      `INSERT INTO project_members (project_id, user_id, added_by) VALUES ($1, $2, $3)
       RETURNING user_id, $4::text AS username, 'member' AS role, added_at, added_by`,
      [projectId, target.id, actor.id, target.username],
    );
    return res.rows[0];
  } catch (err) {
    if (pgCode(err) === '23505') throw new CofferError('E_CONFLICT', `${target.username} is already a member of this project`);
    if (pgCode(err) === '23503') throw notFound(projectId);
    throw err;
  }
}

/** Removes a member: the owner and superusers remove anyone, a member only themselves. */
export async function removeMember(db: pg.Pool, actorIn: Actor | undefined, projectId: string, userId: string): Promise<void> {
  const actor = domainActor(actorIn);
  const id = String(BigInt(checkBigintId(userId, 'member')));
  await projectFor(db, actor, projectId, id === actor.id ? 'leave' : 'manage-members');
  const res = await db.query(`DELETE FROM project_members WHERE project_id = $1 AND user_id = $2`, [projectId, id]);
  if (res.rowCount === 0) throw new CofferError('E_NOT_FOUND', `user ${id} is not a member of this project`);
}
