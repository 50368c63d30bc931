import { randomUUID } from 'node:crypto';
import { makeUser, startTestApp, type TestApp, type TestUser } from '../support/app';

/**
 * Who may do what with projects (src/domain/access.ts), over HTTP: every actor against every
 * operation. Destructive operations get a fresh target each time; a refused one must leave it there.
 */

type ActorName = 'owner' | 'member' | 'other' | 'superuser' | 'system' | 'inactive' | 'anonymous';
const ACTORS: ActorName[] = ['owner', 'member', 'other', 'superuser', 'system', 'inactive', 'anonymous'];

/** view: owner, members, superusers; edit: the same; owner: owner and superusers only. */
type Level = 'view' | 'edit' | 'owner';

function expectedStatus(actor: ActorName, level: Level, ok: number): number {
  if (actor === 'anonymous') return 401;
  if (actor === 'inactive' || actor === 'system') return 403;
  if (actor === 'other') return 404;
  if (actor === 'member' && level === 'owner') return 403;
  return ok;
}

describe('project access: owner, members, superusers; nobody else', () => {
  let app: TestApp;
  const users = {} as Record<Exclude<ActorName, 'anonymous'>, TestUser>;
  let projectId: string;
  let noteId: string;
  let findingId: string;
  let uploadId: string;

  const headersOf = (actor: ActorName, json = false): Record<string, string> => ({
    ...(actor === 'anonymous' ? {} : { authorization: `Bearer ${users[actor].token}` }),
    ...(json ? { 'content-type': 'application/json' } : {}),
  });
  const call = (actor: ActorName, method: string, path: string, body?: unknown) =>
    fetch(`${app.url}/api/v1/projects${path}`, { method, headers: headersOf(actor, body !== undefined), body: body === undefined ? undefined : JSON.stringify(body) });
  const upload = (actor: ActorName, id: string) => {
    const fd = new FormData();
    fd.append('file', new Blob([Buffer.from('evidence')], { type: 'text/plain' }), 'evidence.txt');
    return fetch(`${app.url}/api/v1/projects/${id}/files`, { method: 'POST', headers: headersOf(actor), body: fd });
  };
  const asOwner = async (method: string, path: string, body?: unknown) => {
    const res = await call('owner', method, path, body);
    if (res.status >= 300) throw new Error(`${method} ${path} as owner: ${res.status} ${await res.text()}`);
    return res.status === 204 ? undefined : ((await res.json()) as any);
  };
  const newProject = async () => {
    const p = await asOwner('POST', '', { name: 'Throwaway', settings: { secret: 'owner only' } });
    await asOwner('POST', `/${p.id}/members`, { username: 'member' });
    return p.id as string;
  };
  const count = async (table: string, where: string, params: unknown[]) =>
    (await app.db.pool.query(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`, params)).rows[0].n as number;

  beforeAll(async () => {
    app = await startTestApp();
    users.owner = await makeUser(app, 'owner', 'regular');
    users.member = await makeUser(app, 'member', 'regular');
    users.other = await makeUser(app, 'other', 'regular');
    users.superuser = await makeUser(app, 'root', 'superuser');
    users.system = await makeUser(app, 'backup', 'system');
    users.inactive = await makeUser(app, 'gone', 'regular');
    projectId = (await asOwner('POST', '', { name: 'Audit', settings: { secret: 'owner only' } })).id;
    await asOwner('POST', `/${projectId}/members`, { username: 'member' });
    // A deactivated member: deactivation wins over membership.
    await asOwner('POST', `/${projectId}/members`, { user_id: users.inactive.id });
    await app.db.pool.query(`UPDATE users SET is_active = false WHERE id = $1`, [users.inactive.id]);
    noteId = String((await asOwner('POST', `/${projectId}/notes`, { title: 'n' })).id);
    findingId = String((await asOwner('POST', `/${projectId}/findings`, { title: 'f' })).id);
    const up = await upload('owner', projectId);
    uploadId = ((await up.json()) as any).id;
  });
  afterAll(async () => app.close());

  interface Op {
    name: string;
    level: Level;
    ok: number;
    /** Makes the request; may first create what it acts on (as the owner). */
    run(actor: ActorName): Promise<{ res: Response; stillThere?: () => Promise<boolean> }>;
  }

  const ops: Op[] = [
    { name: 'get project', level: 'view', ok: 200, run: async (a) => ({ res: await call(a, 'GET', `/${projectId}`) }) },
    {
      name: 'delete project',
      level: 'owner',
      ok: 204,
      run: async (a) => {
        const id = await newProject();
        return { res: await call(a, 'DELETE', `/${id}`), stillThere: async () => (await count('projects', 'id = $1', [id])) === 1 };
      },
    },
    { name: 'list notes', level: 'view', ok: 200, run: async (a) => ({ res: await call(a, 'GET', `/${projectId}/notes`) }) },
    { name: 'create note', level: 'edit', ok: 201, run: async (a) => ({ res: await call(a, 'POST', `/${projectId}/notes`, { title: `by ${a}` }) }) },
    { name: 'get note', level: 'view', ok: 200, run: async (a) => ({ res: await call(a, 'GET', `/${projectId}/notes/${noteId}`) }) },
    {
      name: 'delete note',
      level: 'edit',
      ok: 204,
      run: async (a) => {
        const n = await asOwner('POST', `/${projectId}/notes`, { title: 'doomed' });
        return { res: await call(a, 'DELETE', `/${projectId}/notes/${n.id}`), stillThere: async () => (await count('notes', 'id = $1', [n.id])) === 1 };
      },
    },
    { name: 'list findings', level: 'view', ok: 200, run: async (a) => ({ res: await call(a, 'GET', `/${projectId}/findings`) }) },
    { name: 'create finding', level: 'edit', ok: 201, run: async (a) => ({ res: await call(a, 'POST', `/${projectId}/findings`, { title: `by ${a}` }) }) },
    { name: 'get finding', level: 'view', ok: 200, run: async (a) => ({ res: await call(a, 'GET', `/${projectId}/findings/${findingId}`) }) },
    {
      name: 'delete finding',
      level: 'edit',
      ok: 204,
      run: async (a) => {
        const f = await asOwner('POST', `/${projectId}/findings`, { title: 'doomed' });
        return { res: await call(a, 'DELETE', `/${projectId}/findings/${f.id}`), stillThere: async () => (await count('findings', 'id = $1', [f.id])) === 1 };
      },
    },
    { name: 'list uploads', level: 'view', ok: 200, run: async (a) => ({ res: await call(a, 'GET', `/${projectId}/uploads`) }) },
    {
      name: 'create upload',
      level: 'edit',
      ok: 201,
      run: async (a) => {
        const before = await count('uploaded_files', 'project_id = $1', [projectId]);
        const res = await upload(a, projectId);
        const after = await count('uploaded_files', 'project_id = $1', [projectId]);
        expect(after - before).toBe(res.status === 201 ? 1 : 0);
        return { res };
      },
    },
    { name: 'download upload', level: 'view', ok: 200, run: async (a) => ({ res: await call(a, 'GET', `/${projectId}/uploads/${uploadId}/content`) }) },
    { name: 'list members', level: 'view', ok: 200, run: async (a) => ({ res: await call(a, 'GET', `/${projectId}/members`) }) },
    {
      name: 'add member',
      level: 'owner',
      ok: 201,
      run: async (a) => {
        const id = await newProject();
        const res = await call(a, 'POST', `/${id}/members`, { username: 'other' });
        const added = (await count('project_members', 'project_id = $1 AND user_id = $2', [id, users.other.id])) === 1;
        expect(added).toBe(res.status === 201);
        return { res };
      },
    },
    {
      name: 'remove member',
      level: 'owner',
      ok: 204,
      run: async (a) => {
        // The target is a third user, so that "a member leaves" (below) is not what is tested here.
        const id = await newProject();
        await asOwner('POST', `/${id}/members`, { username: 'root' });
        return {
          res: await call(a, 'DELETE', `/${id}/members/${users.superuser.id}`),
          stillThere: async () => (await count('project_members', 'project_id = $1 AND user_id = $2', [id, users.superuser.id])) === 1,
        };
      },
    },
  ];

  const cases = ops.flatMap((op) => ACTORS.map((actor) => [op.name, actor, expectedStatus(actor, op.level, op.ok), op] as const));

  test.each(cases)('%s as %s answers %i', async (_name, actor, status, op) => {
    const { res, stillThere } = await op.run(actor);
    expect(res.status).toBe(status);
    if (status >= 400) expect(((await res.json()) as any).code).toBe({ 401: 'E_UNAUTHENTICATED', 403: 'E_FORBIDDEN', 404: 'E_NOT_FOUND' }[status]);
    if (stillThere) expect(await stillThere()).toBe(status >= 400);
  });

  test.each(ACTORS)('the project list as %s holds exactly the projects it may see', async (actor) => {
    const res = await call(actor, 'GET', '');
    expect(res.status).toBe(actor === 'other' ? 200 : expectedStatus(actor, 'view', 200));
    if (res.status !== 200) return;
    const ids = ((await res.json()) as any[]).map((p) => p.id).sort();
    const uid = users[actor as 'owner'].id;
    const expected = (
      await app.db.pool.query(
        actor === 'superuser'
          ? `SELECT id FROM projects`
          : `SELECT id FROM projects p WHERE owner_id = $1 OR EXISTS (SELECT 1 FROM project_members m WHERE m.project_id = p.id AND m.user_id = $1)`,
        actor === 'superuser' ? [] : [uid],
      )
    ).rows
      .map((r) => r.id)
      .sort();
    expect(ids).toEqual(expected);
    if (actor === 'other') expect(ids).not.toContain(projectId);
    else expect(ids).toContain(projectId);
  });

  test('a project of another user answers exactly like one that does not exist, on every sub-resource', async () => {
    const paths = (id: string) => [
      ['GET', `/${id}`],
      ['DELETE', `/${id}`],
      ['GET', `/${id}/notes`],
      ['POST', `/${id}/notes`],
      ['GET', `/${id}/notes/${noteId}`],
      ['DELETE', `/${id}/notes/${noteId}`],
      ['GET', `/${id}/findings`],
      ['POST', `/${id}/findings`],
      ['GET', `/${id}/findings/${findingId}`],
      ['DELETE', `/${id}/findings/${findingId}`],
      ['GET', `/${id}/uploads`],
      ['GET', `/${id}/uploads/${uploadId}/content`],
      ['GET', `/${id}/members`],
      ['POST', `/${id}/members`],
      ['DELETE', `/${id}/members/${users.member.id}`],
    ];
    const missing = randomUUID();
    const real = paths(projectId);
    const fake = paths(missing);
    for (let i = 0; i < real.length; i++) {
      const body = real[i][0] === 'POST' ? (real[i][1].endsWith('members') ? { username: 'other' } : { title: 't' }) : undefined;
      const a = await call('other', real[i][0], real[i][1], body);
      const b = await call('other', fake[i][0], fake[i][1], body);
      expect([real[i].join(' '), a.status]).toEqual([real[i].join(' '), 404]);
      const [ja, jb] = [(await a.json()) as any, (await b.json()) as any];
      expect(ja.code).toBe(jb.code);
      expect(ja.message.replace(projectId, 'ID')).toBe(jb.message.replace(missing, 'ID'));
    }
    // Uploads are refused before a byte is stored.
    const up = await upload('other', projectId);
    expect(up.status).toBe(404);
    // Nothing was changed by any of it.
    expect(await count('projects', 'id = $1', [projectId])).toBe(1);
    expect(await count('notes', 'id = $1', [noteId])).toBe(1);
    expect(await count('findings', 'id = $1', [findingId])).toBe(1);
    expect(await count('project_members', 'project_id = $1 AND user_id = $2', [projectId, users.other.id])).toBe(0);
  });

  test('a member sees the settings and leaves the project, after which it is gone for them', async () => {
    const id = await newProject();
    const seen = await call('member', 'GET', `/${id}`);
    expect(((await seen.json()) as any).settings).toEqual({ secret: 'owner only' });
    const members = (await (await call('member', 'GET', `/${id}/members`)).json()) as any[];
    expect(members.map((m) => [m.username, m.role])).toEqual([
      ['owner', 'owner'],
      ['member', 'member'],
    ]);
    expect((await call('member', 'DELETE', `/${id}/members/${users.member.id}`)).status).toBe(204);
    expect((await call('member', 'GET', `/${id}`)).status).toBe(404);
    expect((await call('member', 'GET', `/${id}/notes`)).status).toBe(404);
  });

  test('a member cannot remove another member', async () => {
    const id = await newProject();
    await asOwner('POST', `/${id}/members`, { username: 'root' });
    expect((await call('member', 'DELETE', `/${id}/members/${users.superuser.id}`)).status).toBe(403);
    expect(await count('project_members', 'project_id = $1 AND user_id = $2', [id, users.superuser.id])).toBe(1);
  });

  test('members: by user id, no duplicates, not the owner, not system users, not unknown names', async () => {
    const id = await newProject();
    expect((await call('owner', 'POST', `/${id}/members`, { user_id: Number(users.other.id) })).status).toBe(201);
    const dup = await call('owner', 'POST', `/${id}/members`, { username: 'other' });
    expect([dup.status, ((await dup.json()) as any).code]).toEqual([409, 'E_CONFLICT']);
    expect((await call('owner', 'POST', `/${id}/members`, { username: 'owner' })).status).toBe(409);
    // System users and unknown names get the same answer: the endpoint does not reveal who is a system user.
    const sys = await call('owner', 'POST', `/${id}/members`, { username: 'backup' });
    const unknown = await call('owner', 'POST', `/${id}/members`, { username: 'nobody' });
    expect([sys.status, unknown.status]).toEqual([404, 404]);
    expect(((await sys.json()) as any).message.replace('backup', 'X')).toBe(((await unknown.json()) as any).message.replace('nobody', 'X'));
    for (const body of [{}, { username: 'other', user_id: '1' }, { user_id: 'abc' }, { username: '' }]) {
      const res = await call('owner', 'POST', `/${id}/members`, body);
      expect([JSON.stringify(body), res.status]).toEqual([JSON.stringify(body), 400]);
    }
    expect((await call('owner', 'DELETE', `/${id}/members/${users.superuser.id}`)).status).toBe(404);
    expect((await call('owner', 'DELETE', `/${id}/members/not-a-number`)).status).toBe(404);
  });

  test('a superuser sees projects without an owner; regular users do not', async () => {
    const orphan = (await app.db.pool.query(`INSERT INTO projects (name) VALUES ('legacy') RETURNING id`)).rows[0].id;
    expect((await call('superuser', 'GET', `/${orphan}`)).status).toBe(200);
    expect((await call('owner', 'GET', `/${orphan}`)).status).toBe(404);
  });

  test('a new project belongs to whoever created it; a system user cannot create one', async () => {
    const res = await call('member', 'POST', '', { name: 'Mine' });
    expect(res.status).toBe(201);
    expect(((await res.json()) as any).owner_id).toBe(users.member.id);
    expect((await call('system', 'POST', '', { name: 'Nope' })).status).toBe(403);
    expect(await count('projects', `name = 'Nope'`, [])).toBe(0);
  });

  test('a note cannot hang under a note of another project', async () => {
    const other = (await (await call('other', 'POST', '', { name: 'Theirs' })).json()) as any;
    const theirNote = (await (await call('other', 'POST', `/${other.id}/notes`, { title: 'x' })).json()) as any;
    const res = await call('owner', 'POST', `/${projectId}/notes`, { title: 'child', parent_id: theirNote.id });
    expect(res.status).toBe(400);
  });
});
