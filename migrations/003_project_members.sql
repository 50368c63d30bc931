-- Project membership. A project belongs to its owner (projects.owner_id) and to the users the owner
-- adds here; regular users see and change only those projects (see src/domain/access.ts).

CREATE TABLE project_members (
  project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  added_at    timestamptz NOT NULL DEFAULT now(),
  added_by    bigint REFERENCES users (id) ON DELETE SET NULL,
  PRIMARY KEY (project_id, user_id)
);
-- "Which projects may this user see?" is asked on every project list.
CREATE INDEX project_members_user_idx ON project_members (user_id);
