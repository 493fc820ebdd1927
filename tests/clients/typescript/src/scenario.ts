// A TypeScript client generated from Flowgate's OpenAPI document drives a tenant's first day:
// an operator onboards a tenant; its admin mints an API key for an automation account; that key
// creates users and a group, pages through the users with the cursor, reads and verifies the
// audit trail; and the client gets typed problems for a 404 and a 422. `tsc` checks the whole
// scenario against the generated types before it runs.
//
// Environment: FLOWGATE_URL, FLOWGATE_OPERATOR_TOKEN, and NODE_EXTRA_CA_CERTS naming the PEM
// file the server's certificate chains to.

import { randomUUID } from 'node:crypto';

import {
  addGroupMember,
  createApiKey,
  createGroup,
  createRoleBinding,
  createServiceAccount,
  createTenant,
  createUser,
  getUser,
  listAuditEvents,
  listUsers,
  verifyAudit,
  type Problem,
  type ProblemCode,
} from './client/index.js';
import { createClient, createConfig } from './client/client/index.js';

const baseUrl = required('FLOWGATE_URL');

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function check(condition: boolean, what: string, detail?: unknown): asserts condition {
  if (!condition) throw new Error(`${what}: ${JSON.stringify(detail)}`);
}

/** A client that presents `token` for every operation. */
function as(token: string) {
  return createClient(createConfig({ baseUrl, auth: () => token }));
}

/** The success body of a call, or an error naming the problem. */
function ok<T>(result: { data?: T; error?: unknown; response: Response }, status: number): T {
  check(result.response.status === status, `expected ${status}`, result.error);
  check(result.data !== undefined, 'a body', result.response.status);
  return result.data;
}

function problem(error: Problem | undefined, status: number, code: ProblemCode): Problem {
  check(error !== undefined && error.status === status && error.code === code, `a ${code} problem`, error);
  return error;
}

async function main(): Promise<void> {
  const operator = as(required('FLOWGATE_OPERATOR_TOKEN'));
  const tenant = `sdk-ts-${randomUUID().slice(0, 8)}`;
  const onboarded = ok(
    await createTenant({ client: operator, body: { slug: tenant, name: 'SDK TypeScript', environment: 'prod' } }),
    201,
  );
  check(onboarded.tenant.slug === tenant, 'the new tenant', onboarded.tenant);
  const admin = as(onboarded.admin_api_key);
  const path = { tenant };

  const account = ok(await createServiceAccount({ client: admin, path, body: { name: 'automation' } }), 201);
  ok(
    await createRoleBinding({
      client: admin,
      path,
      body: { role: 'Admin', subject: { type: 'service_account', id: account.id }, scope: { type: 'tenant' } },
    }),
    201,
  );
  const issued = ok(await createApiKey({ client: admin, path, body: { name: 'sdk', service_account_id: account.id } }), 201);
  check(issued.key.startsWith('fgk_'), 'an API key', issued.prefix);
  const automation = as(issued.key);

  const emails = [0, 1, 2, 3, 4].map((i) => `user${i}@example.com`);
  const users = [];
  for (const email of emails) {
    users.push(ok(await createUser({ client: automation, path, body: { email, display_name: email } }), 201));
  }
  const group = ok(await createGroup({ client: automation, path, body: { name: 'finance' } }), 201);
  for (const user of users.slice(0, 2)) {
    const added = await addGroupMember({ client: automation, path: { tenant, id: group.id }, body: { user_id: user.id } });
    check(added.response.status === 204, 'a member added', added.error);
  }

  const seen: string[] = [];
  let after: string | undefined;
  let pages = 0;
  do {
    const page = ok(await listUsers({ client: automation, path, query: { limit: 2, after } }), 200);
    pages += 1;
    seen.push(...page.items.map((u) => u.email));
    after = page.next_cursor ?? undefined;
  } while (after);
  check(JSON.stringify(seen.sort()) === JSON.stringify(emails), 'every user once', seen);
  check(pages === 3, 'three pages of two', pages);

  const events = ok(await listAuditEvents({ client: automation, path, query: { limit: 1000 } }), 200);
  const created = events.items.filter((e) => e.action === 'user.create');
  check(created.length === 5, 'one audit event per user', created.length);
  check(created.every((e) => e.actor_id === account.id), 'events name the automation account');
  const report = ok(await verifyAudit({ client: automation, path }), 200);
  check(report.ok && report.events >= events.items.length, 'an intact trail', report);

  const missing = await getUser({ client: automation, path: { tenant, id: randomUUID() } });
  problem(missing.error, 404, 'not_found');
  const invalid = await createUser({ client: automation, path, body: { email: 'not an email', display_name: 'x' } });
  const fields = problem(invalid.error, 422, 'validation_failed').errors?.map((e) => e.field);
  check(JSON.stringify(fields) === '["email"]', 'the failing field named', fields);
  console.log(`typescript scenario passed on ${tenant}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
