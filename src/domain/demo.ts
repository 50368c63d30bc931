import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { UPLOAD_KINDS, type UploadKind } from '../storage/uploads';

export interface DemoSummary {
  users: number;
  members: number;
  projects: number;
  notes: number;
  findings: number;
  events: number;
  files: number;
  fileBytes: number;
}

/**
 * The people who own the demo projects. They are created without a usable password (nobody can log in
 * as them until `coffer users set-password demo-ada` gives them one) and reused by later runs.
 */
export const DEMO_USERS = ['demo-ada', 'demo-ben', 'demo-chiara', 'demo-dmitri'];

// A tiny valid PNG (1x1), so image uploads are real images.
const PNG_1x1 = Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5d7a0f90000000049454e44ae426082', 'hex');

/**
 * Fills the database with realistic data for try-outs and measurements: rows are generated in SQL
 * (generate_series), files are written to the upload folders. Deterministic in shape, random in ids.
 */
export async function generateDemoData(db: pg.Pool, dataDir: string, scale: number, onProgress?: (msg: string) => void): Promise<DemoSummary> {
  const projects = 20 * scale;
  const notes = 250 * scale;
  const findings = 500 * scale;
  const events = 2000 * scale;
  const files = 12 * scale;
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    onProgress?.(`users: ${DEMO_USERS.length}`);
    await client.query(`INSERT INTO users (username, password_hash) SELECT unnest($1::text[]), '!' ON CONFLICT (username) DO NOTHING`, [DEMO_USERS]);
    const userIds = (await client.query<{ id: string }>(`SELECT id FROM users WHERE username = ANY($1::text[]) ORDER BY username`, [DEMO_USERS])).rows.map((r) => r.id);
    onProgress?.(`projects: ${projects}`);
    const proj = await client.query<{ id: string }>(
      `INSERT INTO projects (name, tags, settings, status, owner_id, created_at)
       SELECT 'Project ' || g || ' — Prüfung «' || substr(md5(g::text), 1, 6) || '»',
              ARRAY['web', 'scale-' || $2::text, CASE WHEN g % 3 = 0 THEN 'internal' ELSE 'external' END],
              jsonb_build_object('language', CASE WHEN g % 2 = 0 THEN 'de-DE' ELSE 'en-US' END, 'retest', g % 5 = 0,
                                 'scope', jsonb_build_array('10.0.' || (g % 255) || '.0/24', 'app' || g || '.example.com')),
              (ARRAY['draft', 'active', 'archived'])[1 + g % 3]::project_status,
              ($3::bigint[])[1 + g % array_length($3::bigint[], 1)],
              now() - make_interval(days => g % 400)
         FROM generate_series(1, $1::int) g
       RETURNING id`,
      [projects, scale, userIds],
    );
    const ids = proj.rows.map((r) => r.id);
    // Every project has the next demo user as a member; active ones the one after that as well.
    const members = await client.query(
      `INSERT INTO project_members (project_id, user_id, added_by)
       SELECT p.id, ($2::bigint[])[1 + (array_position($2::bigint[], p.owner_id) - 1 + k) % array_length($2::bigint[], 1)], p.owner_id
         FROM projects p CROSS JOIN generate_series(1, 2) k
        WHERE p.id = ANY($1::uuid[]) AND (k = 1 OR p.status = 'active')`,
      [ids, userIds],
    );
    onProgress?.(`findings: ${findings}`);
    await client.query(
      `INSERT INTO findings (project_id, title, description, score, confidence, reference_code, data)
       SELECT ($1::uuid[])[1 + g % array_length($1::uuid[], 1)],
              'Finding ' || g || ': ' || (ARRAY['SQL injection', 'Stored XSS', 'Weak TLS', 'IDOR', 'Open redirect'])[1 + g % 5],
              E'## Description\\n\\nThe parameter \`q\` is "reflected" without encoding — naïve filter \\\\ bypass.\\n' || repeat('Details ' || g || '. ', 10),
              round((g % 100)::numeric / 10 + 0.05, 2),
              (g % 1000)::double precision / 1000,
              CASE WHEN g % 4 = 0 THEN 'REF-' || g END,
              jsonb_build_object('cvss', 'CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H', 'affected', jsonb_build_array('host' || g % 17), 'retest', g % 7 = 0)
         FROM generate_series(1, $2::int) g`,
      [ids, findings],
    );
    onProgress?.(`notes: ${notes}`);
    // Each note's parent is an earlier note of the same project (or none), a realistic tree.
    await client.query(
      `INSERT INTO notes (project_id, title, body, position)
       SELECT ($1::uuid[])[1 + g % array_length($1::uuid[], 1)], 'Note ' || g, repeat('Lorem ipsum ✓ dolor sit amet. ', 1 + g % 20), g % 10
         FROM generate_series(1, $2::int) g`,
      [ids, notes],
    );
    await client.query(
      `UPDATE notes n SET parent_id = p.id
         FROM (SELECT id, project_id, lag(id) OVER (PARTITION BY project_id ORDER BY id) AS prev FROM notes) p
        WHERE n.id = p.id AND p.prev IS NOT NULL AND n.id % 3 <> 0 AND n.parent_id IS NULL`,
    );
    // Close the cycle: some projects point at one of their findings.
    await client.query(
      `UPDATE projects p SET lead_finding_id = f.id
         FROM (SELECT DISTINCT ON (project_id) project_id, id FROM findings ORDER BY project_id, id) f
        WHERE f.project_id = p.id AND p.status = 'active'`,
    );
    onProgress?.(`events: ${events}`);
    await client.query(
      `INSERT INTO events (project_id, kind, payload, digest, created_at)
       SELECT ($1::uuid[])[1 + g % array_length($1::uuid[], 1)],
              (ARRAY['login', 'export', 'edit', 'comment'])[1 + g % 4],
              jsonb_build_object('seq', g, 'ip', '192.0.2.' || (g % 250), 'agent', 'Mozilla/5.0 (X11; Linux x86_64)', 'nested', jsonb_build_object('a', jsonb_build_array(g, g * 2, null))),
              decode(md5(g::text) || md5((g + 1)::text), 'hex'),
              now() - make_interval(mins => g)
         FROM generate_series(1, $2::int) g`,
      [ids, events],
    );
    onProgress?.(`files: ${files}`);
    let fileBytes = 0;
    const kinds: UploadKind[] = ['file', 'image', 'asset'];
    for (let i = 0; i < files; i++) {
      const kind = kinds[i % 3];
      const { name, content, type } = demoFile(kind, i);
      const id = (await client.query<{ id: string }>('SELECT gen_random_uuid() AS id')).rows[0].id;
      const storagePath = `${UPLOAD_KINDS[kind]}/${id.slice(0, 2)}/${id}`;
      const abs = path.join(dataDir, storagePath);
      fs.mkdirSync(path.dirname(abs), { recursive: true });
      fs.writeFileSync(abs, content);
      fileBytes += content.length;
      await client.query(
        `INSERT INTO uploaded_files (id, project_id, kind, name, storage_path, content_type, size, sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [id, ids[i % ids.length], kind, name, storagePath, type, content.length, createHash('sha256').update(content).digest()],
      );
    }
    await client.query('COMMIT');
    return { users: DEMO_USERS.length, members: members.rowCount ?? 0, projects, notes, findings, events, files, fileBytes };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

function demoFile(kind: UploadKind, i: number): { name: string; content: Buffer; type: string } {
  if (kind === 'image') return { name: `screenshot-${i}.png`, content: Buffer.concat([PNG_1x1, randomBytes(20_000 + (i % 7) * 10_000)]), type: 'image/png' };
  if (kind === 'asset') return { name: `logo-${i}.svg`, content: Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg"><text>${i}</text></svg>\n`.repeat(50)), type: 'image/svg+xml' };
  const lines = Array.from({ length: 2000 + (i % 5) * 1000 }, (_, n) => `${n};host${n % 50}.example.com;${n % 65536};open;"banner ${i}"`);
  return { name: `scan-${i}.csv`, content: Buffer.from(lines.join('\n') + '\n'), type: 'text/csv' };
}
