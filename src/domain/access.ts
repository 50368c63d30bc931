import type pg from 'pg';
import { CofferError } from '../core/errors';

/**
 * Who may do what with projects: the one place that decides. Every domain function takes the acting
 * user and asks here before it reads or changes anything.
 *
 * - Anonymous: 401. Deactivated users and system users (they only take backups): 403 on everything.
 * - Superusers: everything, on every project.
 * - The owner (projects.owner_id): everything on the project.
 * - Members (project_members): read the project and its notes, findings, uploads and member list;
 *   create and delete notes, findings and uploads; leave the project. Not: delete the project, add or
 *   remove other members.
 * - Anyone else: the project does not exist for them (404, the same answer as for an unknown id), on
 *   the project and on every sub-resource, so ids cannot be probed.
 */

/** The acting user, as far as the policy needs to know it (accounts' User fits). */
export interface Actor {
  id: string;
  isActive: boolean;
  isSuperuser: boolean;
  isSystemUser: boolean;
}

export type ProjectRole = 'superuser' | 'owner' | 'member';

export type ProjectAction =
  /** The project, its notes, findings, uploads and members. */
  | 'view'
  /** Create and delete notes, findings and uploads. */
  | 'edit'
  /** Delete the project. */
  | 'delete'
  /** Add and remove members. */
  | 'manage-members'
  /** Remove oneself from the members. */
  | 'leave';

const ALLOWED: Record<ProjectRole, ReadonlySet<ProjectAction>> = {
  superuser: new Set(['view', 'edit', 'delete', 'manage-members', 'leave']),
  owner: new Set(['view', 'edit', 'delete', 'manage-members', 'leave']),
  member: new Set(['view', 'edit', 'leave']),
};

/** The actor, if they may use the domain API at all; throws 401/403 otherwise. */
export function domainActor(actor: Actor | undefined): Actor {
  if (!actor) throw new CofferError('E_UNAUTHENTICATED', 'authentication required: log in or send Authorization: Bearer <token>');
  if (!actor.isActive) throw new CofferError('E_FORBIDDEN', 'this account is deactivated');
  if (actor.isSystemUser) throw new CofferError('E_FORBIDDEN', 'system users take backups; they have no access to projects');
  return actor;
}

/** The decision for one role and action: `hide` means "answer as if the project did not exist". */
export function decide(role: ProjectRole | undefined, action: ProjectAction): 'allow' | 'deny' | 'hide' {
  if (role === undefined) return 'hide';
  return ALLOWED[role].has(action) ? 'allow' : 'deny';
}

export function notFound(projectId: string): CofferError {
  return new CofferError('E_NOT_FOUND', `no project '${projectId}'`);
}

/**
 * The actor's role on a project, or undefined when the project does not exist or is not theirs.
 * `projectId` must already be a well-formed uuid.
 */
export async function projectRole(db: pg.Pool, actor: Actor, projectId: string): Promise<ProjectRole | undefined> {
  const res = await db.query<{ owner_id: string | null; is_member: boolean }>(
    `SELECT p.owner_id, EXISTS (SELECT 1 FROM project_members m WHERE m.project_id = p.id AND m.user_id = $2) AS is_member
       FROM projects p WHERE p.id = $1`,
    [projectId, actor.id],
  );
  const row = res.rows[0];
  if (!row) return undefined;
  if (actor.isSuperuser) return 'superuser';
  if (row.owner_id !== null && String(row.owner_id) === actor.id) return 'owner';
  return row.is_member ? 'member' : undefined;
}

/** Checks that the actor may do `action` on the project; returns their role or throws 401/403/404. */
export async function authorizeProject(db: pg.Pool, actorIn: Actor | undefined, projectId: string, action: ProjectAction): Promise<ProjectRole> {
  const actor = domainActor(actorIn);
  const role = await projectRole(db, actor, projectId);
  const decision = decide(role, action);
  if (decision === 'hide') throw notFound(projectId);
  if (decision === 'deny') {
    throw new CofferError('E_FORBIDDEN', action === 'delete' ? 'only the owner or a superuser may delete a project' : 'only the owner or a superuser may manage members');
  }
  return role!;
}

/**
 * The SQL condition (on projects aliased `p`) for the projects an actor may see, with its parameters
 * starting at `$first`. Kept beside `projectRole` so that lists and single reads cannot disagree.
 */
export function visibleProjectsCondition(actor: Actor, first: number): { sql: string; params: unknown[] } {
  if (actor.isSuperuser) return { sql: 'true', params: [] };
  return {
    sql: `(p.owner_id = $${first} OR EXISTS (SELECT 1 FROM project_members m WHERE m.project_id = p.id AND m.user_id = $${first}))`,
    params: [actor.id],
  };
}
