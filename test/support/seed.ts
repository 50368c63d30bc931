import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';

/**
 * A project with an owner, a member, notes, findings and events, the small data set most tests start
 * from. The two users have no usable password (nobody logs in as them).
 */
export async function seedDomain(pool: pg.Pool, opts: { events?: number } = {}): Promise<{ projectId: string }> {
  const users = await pool.query<{ id: string }>(
    `INSERT INTO users (username, password_hash) VALUES ('seed-owner', '!'), ('seed-member', '!')
     ON CONFLICT (username) DO UPDATE SET username = EXCLUDED.username RETURNING id`,
  );
  const [ownerId, memberId] = users.rows.map((r) => r.id);
  const p = await pool.query(`INSERT INTO projects (name, tags, settings, status, owner_id) VALUES ('Seed', '{a,b}', '{"k": 1}', 'active', $1) RETURNING id`, [ownerId]);
  const projectId = p.rows[0].id as string;
  await pool.query(`INSERT INTO project_members (project_id, user_id, added_by) VALUES ($1, $2, $3)`, [projectId, memberId, ownerId]);
  await pool.query(`INSERT INTO notes (project_id, title) SELECT $1, 'note ' || g FROM generate_series(1, 20) g`, [projectId]);
  await pool.query(`INSERT INTO findings (project_id, title, score) SELECT $1, 'finding ' || g, g / 3.0 FROM generate_series(1, 30) g`, [projectId]);
  await pool.query(
    `INSERT INTO events (project_id, kind, payload, digest) SELECT $1, 'edit', jsonb_build_object('n', g), decode(md5(g::text), 'hex') FROM generate_series(1, $2::int) g`,
    [projectId, opts.events ?? 100],
  );
  return { projectId };
}

/** Writes `count` small files spread over the three upload folders; returns their relative paths. */
export function writeUploadFiles(dataDir: string, count: number): string[] {
  const folders = ['uploadedfiles', 'uploadedimages', 'uploadedassets'];
  const written: string[] = [];
  for (let i = 0; i < count; i++) {
    const rel = `${folders[i % 3]}/${(i % 7).toString(16).padStart(2, '0')}/file-${i}${i % 3 === 1 ? '.png' : '.txt'}`;
    fs.mkdirSync(path.join(dataDir, path.dirname(rel)), { recursive: true });
    fs.writeFileSync(path.join(dataDir, rel), `content of file ${i}\n`.repeat(1 + (i % 50)));
    written.push(rel);
  }
  return written;
}

/** Every file below a folder: to see what a command left behind. */
export function filesBelow(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name));
}

/** sha256 of every file in the upload folders below `dir`, by path relative to it. */
export function treeOf(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const folder of ['uploadedfiles', 'uploadedimages', 'uploadedassets']) {
    const root = path.join(dir, folder);
    if (!fs.existsSync(root)) continue;
    for (const e of fs.readdirSync(root, { recursive: true, withFileTypes: true })) {
      if (!e.isFile()) continue;
      const abs = path.join(e.parentPath, e.name);
      out[path.relative(dir, abs)] = createHash('sha256').update(fs.readFileSync(abs)).digest('hex');
    }
  }
  return out;
}
