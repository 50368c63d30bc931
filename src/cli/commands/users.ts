import type { Command } from 'commander';
import { CofferError } from '../../core/errors';
import { randomSecret } from '../../accounts/secrets';
import { createToken } from '../../accounts/sessions';
import { createUser, deactivateUser, getUser, listUsers, setPassword, type Role } from '../../accounts/users';
import { print, readSecretFromStdin, runtime, withDatabase } from '../runtime';

export function registerUsers(program: Command): void {
  const users = program.command('users').description('manage user accounts (system users can only be created here)');

  users
    .command('create <name>')
    .description('create a user; without --password-stdin a random password is generated and printed once')
    .option('--system', 'a system user: may take backups (with the BACKUP_KEY)')
    .option('--superuser', 'a superuser: administers users, cannot take backups')
    .option('--password-stdin', 'read the password from standard input')
    .action(async (name: string, opts: { system?: boolean; superuser?: boolean; passwordStdin?: boolean }) => {
      if (opts.system && opts.superuser) throw new CofferError('E_USAGE', '--system and --superuser are exclusive');
      const role: Role = opts.system ? 'system' : opts.superuser ? 'superuser' : 'regular';
      const password = opts.passwordStdin ? await readSecretFromStdin() : randomSecret(18);
      const rt = runtime({ quietByDefault: true });
      await withDatabase(rt, async (db) => {
        const user = await createUser(db.pool, { username: name, password, role });
        print(`created ${role} user '${user.username}' (id ${user.id})`);
        if (!opts.passwordStdin) print(`password: ${password}`);
      });
    });

  users
    .command('list')
    .description('list users')
    .action(async () => {
      const rt = runtime({ quietByDefault: true });
      await withDatabase(rt, async (db) => {
        const rows = await listUsers(db.pool);
        print(['USERNAME', 'ROLE', 'ACTIVE', 'CREATED'].join('\t'));
        for (const u of rows) {
          const role = u.isSystemUser ? 'system' : u.isSuperuser ? 'superuser' : 'regular';
          print([u.username, role, u.isActive ? 'yes' : 'no', u.createdAt.toISOString()].join('\t'));
        }
      });
    });

  users
    .command('token <name>')
    .description('create an API token for a user; prints only the token')
    .option('--label <label>', 'a label to recognise the token by', '')
    .action(async (name: string, opts: { label: string }) => {
      const rt = runtime({ quietByDefault: true });
      await withDatabase(rt, async (db) => {
        const user = await getUser(db.pool, name);
        print(await createToken(db.pool, user.id, opts.label));
      });
    });

  users
    .command('set-password <name>')
    .description("set a user's password (ends their sessions); random and printed once without --password-stdin")
    .option('--password-stdin', 'read the password from standard input')
    .action(async (name: string, opts: { passwordStdin?: boolean }) => {
      const password = opts.passwordStdin ? await readSecretFromStdin() : randomSecret(18);
      const rt = runtime({ quietByDefault: true });
      await withDatabase(rt, async (db) => {
        await setPassword(db.pool, name, password);
        print(`password of '${name}' changed`);
        if (!opts.passwordStdin) print(`password: ${password}`);
      });
    });

  users
    .command('deactivate <name>')
    .description('deactivate a user and end their sessions')
    .action(async (name: string) => {
      const rt = runtime({ quietByDefault: true });
      await withDatabase(rt, async (db) => {
        await deactivateUser(db.pool, name);
        print(`user '${name}' deactivated`);
      });
    });
}
