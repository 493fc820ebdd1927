"""A Python client generated from Flowgate's OpenAPI document drives a tenant's first day.

An operator onboards a tenant; its admin mints an API key for an automation account; that key
creates users and a group, pages through the users with the cursor, reads and verifies the
audit trail; and the client gets typed problems for a 404 and a 422.

Environment: FLOWGATE_URL, FLOWGATE_CA (PEM file the server's certificate chains to),
FLOWGATE_OPERATOR_TOKEN; the generated package `flowgate_client` on PYTHONPATH.
"""

import os
import ssl
import uuid
from http import HTTPStatus

from flowgate_client import AuthenticatedClient
from flowgate_client.api.api_keys import create_api_key
from flowgate_client.api.audit import list_audit_events, verify_audit
from flowgate_client.api.groups import add_group_member, create_group
from flowgate_client.api.platform import create_tenant
from flowgate_client.api.role_bindings import create_role_binding
from flowgate_client.api.service_accounts import create_service_account
from flowgate_client.api.users import create_user, get_user, list_users
from flowgate_client.models import (
    AddGroupMember,
    AuditEventPage,
    CreateApiKey,
    CreatedTenant,
    CreateGroup,
    CreateRoleBinding,
    CreateServiceAccount,
    CreateTenant,
    CreateUser,
    Environment,
    GroupView,
    IssuedApiKey,
    Problem,
    ProblemCode,
    RoleBindingView,
    ScopeRef,
    ScopeType,
    ServiceAccountView,
    SubjectRef,
    SubjectType,
    UserPage,
    UserView,
    VerifyReport,
)
from flowgate_client.types import UNSET

BASE = os.environ["FLOWGATE_URL"]
TLS = ssl.create_default_context(cafile=os.environ["FLOWGATE_CA"])


def client(token: str) -> AuthenticatedClient:
    return AuthenticatedClient(base_url=BASE, token=token, verify_ssl=TLS)


def expect(response, status: HTTPStatus, kind: type):
    assert response.status_code == status, (response.status_code, response.content)
    assert isinstance(response.parsed, kind), type(response.parsed)
    return response.parsed


def main() -> None:
    operator = client(os.environ["FLOWGATE_OPERATOR_TOKEN"])
    slug = f"sdk-py-{uuid.uuid4().hex[:10]}"
    onboarded = expect(
        create_tenant.sync_detailed(
            client=operator,
            body=CreateTenant(slug=slug, name="SDK Python", environment=Environment.PROD),
        ),
        HTTPStatus.CREATED,
        CreatedTenant,
    )
    assert onboarded.tenant.slug == slug
    admin = client(onboarded.admin_api_key)

    account = expect(
        create_service_account.sync_detailed(
            slug, client=admin, body=CreateServiceAccount(name="automation")
        ),
        HTTPStatus.CREATED,
        ServiceAccountView,
    )
    expect(
        create_role_binding.sync_detailed(
            slug,
            client=admin,
            body=CreateRoleBinding(
                role="Admin",
                subject=SubjectRef(type_=SubjectType.SERVICE_ACCOUNT, id=account.id),
                scope=ScopeRef(type_=ScopeType.TENANT),
            ),
        ),
        HTTPStatus.CREATED,
        RoleBindingView,
    )
    issued = expect(
        create_api_key.sync_detailed(
            slug,
            client=admin,
            body=CreateApiKey(name="sdk", service_account_id=account.id),
        ),
        HTTPStatus.CREATED,
        IssuedApiKey,
    )
    assert issued.key.startswith("fgk_")
    automation = client(issued.key)

    emails = {f"user{i}@example.com" for i in range(5)}
    users = [
        expect(
            create_user.sync_detailed(
                slug, client=automation, body=CreateUser(email=email, display_name=email)
            ),
            HTTPStatus.CREATED,
            UserView,
        )
        for email in sorted(emails)
    ]
    group = expect(
        create_group.sync_detailed(slug, client=automation, body=CreateGroup(name="finance")),
        HTTPStatus.CREATED,
        GroupView,
    )
    for user in users[:2]:
        added = add_group_member.sync_detailed(
            slug, group.id, client=automation, body=AddGroupMember(user_id=user.id)
        )
        assert added.status_code == HTTPStatus.NO_CONTENT, added.content

    seen, after, pages = [], UNSET, 0
    while True:
        page = expect(
            list_users.sync_detailed(slug, client=automation, limit=2, after=after),
            HTTPStatus.OK,
            UserPage,
        )
        pages += 1
        seen.extend(u.email for u in page.items)
        if not page.next_cursor:
            break
        after = uuid.UUID(page.next_cursor)
    assert sorted(seen) == sorted(emails), seen
    assert pages == 3, pages

    events = expect(
        list_audit_events.sync_detailed(slug, client=automation, limit=1000),
        HTTPStatus.OK,
        AuditEventPage,
    )
    created = [e for e in events.items if e.action == "user.create"]
    assert len(created) == 5, [e.action for e in events.items]
    assert all(e.actor_id == str(account.id) for e in created)
    report = expect(verify_audit.sync_detailed(slug, client=automation), HTTPStatus.OK, VerifyReport)
    assert report.ok and report.events >= len(events.items), report

    missing = expect(
        get_user.sync_detailed(slug, uuid.uuid4(), client=automation),
        HTTPStatus.NOT_FOUND,
        Problem,
    )
    assert missing.code == ProblemCode.NOT_FOUND, missing
    invalid = expect(
        create_user.sync_detailed(
            slug, client=automation, body=CreateUser(email="not an email", display_name="x")
        ),
        HTTPStatus.UNPROCESSABLE_ENTITY,
        Problem,
    )
    assert invalid.code == ProblemCode.VALIDATION_FAILED, invalid
    assert [e.field for e in invalid.errors] == ["email"], invalid.errors
    print(f"python scenario passed on {slug}")


if __name__ == "__main__":
    main()
