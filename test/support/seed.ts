import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';

/** A project with notes, findings and events, the small data set most tests start from. */
export async function seedDomain(pool: pg.Pool, opts: { events?: number } = {}): Promise<{ projectId: string }> {
  const p = await pool.query(`INSERT INTO projects (name, tags, settings, status) VALUES ('Seed', '{a,b}', '{"k": 1}', 'active') RETURNING id`);
  const projectId = p.rows[0].id as string;
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
