import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEMO_USERS, generateDemoData } from '../src/domain/demo';
import { listProjects } from '../src/domain/projects';
import { toUser } from '../src/accounts/users';
import { backupToFile, restoreFile } from './support/archive';
import { createTestDatabase, type TestDatabase } from './support/db';

describe('demo data has owners and members, and memberships survive a backup and restore', () => {
  let db: TestDatabase;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-demo-'));

  beforeAll(async () => {
    db = await createTestDatabase({ migrated: true });
  });
  afterAll(async () => {
    await db.drop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('every demo project has a demo owner and at least one other demo user as member; a second run reuses the users', async () => {
    const dir = path.join(tmp, 'data');
    const first = await generateDemoData(db.pool, dir, 1);
    const second = await generateDemoData(db.pool, dir, 1);
    expect(first.members).toBeGreaterThanOrEqual(first.projects);
    expect(second.users).toBe(DEMO_USERS.length);
    const users = await db.pool.query(`SELECT id, username FROM users ORDER BY username`);
    expect(users.rows.map((u) => u.username)).toEqual([...DEMO_USERS].sort());
    const bad = await db.pool.query(
      `SELECT p.id FROM projects p
        WHERE p.owner_id IS NULL
           OR NOT EXISTS (SELECT 1 FROM project_members m WHERE m.project_id = p.id)
           OR EXISTS (SELECT 1 FROM project_members m WHERE m.project_id = p.id AND m.user_id = p.owner_id)`,
    );
    expect(bad.rows).toEqual([]);
    // Each demo user sees some projects, not all of them.
    const total = (await db.pool.query(`SELECT count(*)::int AS n FROM projects`)).rows[0].n;
    for (const name of DEMO_USERS) {
      const row = (await db.pool.query(`SELECT * FROM users WHERE username = $1`, [name])).rows[0];
      const seen = await listProjects(db.pool, toUser(row));
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.length).toBeLessThan(total);
    }
  });

  test('project_members is in the backup and restored row for row', async () => {
    const archive = path.join(tmp, 'demo.zip');
    await backupToFile(db.pool, path.join(tmp, 'data'), archive);
    const target = await createTestDatabase();
    try {
      await restoreFile(archive, target.pool, path.join(tmp, 'restored'));
      const q = `SELECT project_id, user_id, added_at, added_by FROM project_members ORDER BY project_id, user_id`;
      const [a, b] = [(await db.pool.query(q)).rows, (await target.pool.query(q)).rows];
      expect(a.length).toBeGreaterThan(0);
      expect(b).toEqual(a);
    } finally {
      await target.drop();
    }
  });
});
