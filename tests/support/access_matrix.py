"""The access matrix: who gets what from every URL pattern and every admin action.

One `Entry` per URL pattern of the URL map (walked from `django.urls.get_resolver()`,
named by `route_of`) and per action of every registered ModelAdmin (`action_key`).
Each entry holds its operations (`Check`: a method, a body, the kind of object whose
tenant the caller acts on) and, per principal, the statuses it must answer. The
expectations are written from the rules (orchestrator/access.py, the API views, the
dashboard, orchestrator/admin.py), never read back from the answers:

- principals: `anonymous`, the viewer, operator and admin of tenant A, and a superuser
  (member of no tenant). On an object of a tenant each member acts on A's object (`own`)
  and on B's (`other`); anonymous on A's, the superuser on B's;
- the API answers anonymous 401, a refused role on its own tenant's object 403, another
  tenant's object 404 (it is not among the caller's); runtime configuration, flag
  changes and the audit of all tenants are a superuser's (an admin reads their tenants');
- the dashboard and the admin send anonymous to the login (302); a refused admin page
  is a 403, or a redirect (302) as for an object that does not exist;
- an allowed write answers its success or a validation answer past the access check
  (`PAST`: never 401, 403 or 404); a refused write changes nothing (the test checks).

`ENTRIES` is the declaration; `url_patterns()` and `admin_actions()` are what the
project has; tests/integration/test_access_matrix.py fails when they differ.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.contrib import admin
from django.urls import URLPattern, URLResolver, get_resolver

S = frozenset
OK = S({200})
REDIRECT = S({302})
# An allowed write: its success, or a validation or state answer past the access check.
PAST = S({200, 201, 302, 400, 409, 422})
API_ANONYMOUS = S({401})
ADMIN_REFUSED = S({302, 403})
# A refused admin action: the list again (no action offered), a redirect with an error
# message, or a 403 for a list the user may not see; the row is unchanged either way.
ACTION_REFUSED = S({200, 302, 403})

ROLES = {"viewer": 1, "operator": 2, "admin": 3}
PLAIN = ("anonymous", "viewer", "operator", "admin", "superuser")
TENANTED = (
    "anonymous",
    "viewer own",
    "operator own",
    "admin own",
    "viewer other",
    "operator other",
    "admin other",
    "superuser",
)
Expect = Mapping[str, frozenset[int]]
ByRank = Callable[[int], frozenset[int]]


def at_least(need: int, yes: frozenset[int], no: frozenset[int]) -> ByRank:
    return lambda rank: yes if rank >= need else no


def _const(statuses: frozenset[int]) -> ByRank:
    return lambda rank: statuses


def plain(anonymous: frozenset[int], member: ByRank | frozenset[int], superuser: frozenset[int]) -> Expect:
    """Statuses of an operation on no tenant's object, by principal."""
    by_rank = member if callable(member) else _const(member)
    return {"anonymous": anonymous, **{r: by_rank(n) for r, n in ROLES.items()}, "superuser": superuser}


def tenanted(
    anonymous: frozenset[int],
    own: ByRank | frozenset[int],
    other: ByRank | frozenset[int],
    superuser: frozenset[int],
) -> Expect:
    """Statuses of an operation on an object of tenant A (`own`) or B (`other`)."""
    mine = own if callable(own) else _const(own)
    theirs = other if callable(other) else _const(other)
    return {
        "anonymous": anonymous,
        **{f"{r} own": mine(n) for r, n in ROLES.items()},
        **{f"{r} other": theirs(n) for r, n in ROLES.items()},
        "superuser": superuser,
    }


def everyone(statuses: frozenset[int]) -> Expect:
    return plain(statuses, statuses, statuses)


@dataclass(frozen=True)
class Check:
    """One operation on an entry.

    `target`: the kind of world object (tests/integration/test_access_matrix.py) whose
    pk fills the URL and whose tenant says own/other; None: no tenant's. `watch`: for a
    write, the model label whose rows a refused principal must leave as they were (the
    target's row when None). `changes`: principals for whom the target must change (an
    admin action's effect: its answer is a redirect for everyone). `suspect`: principal
    → why the real answer is believed wrong (the case is a strict xfail).
    """

    method: str
    expect: Expect
    target: str | None = None
    body: Mapping[str, Any] | None = None
    query: str = ""
    watch: str | None = None
    changes: frozenset[str] = frozenset()
    suspect: Mapping[str, str] = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        return self.method != "GET"


@dataclass(frozen=True)
class Entry:
    key: str
    checks: tuple[Check, ...]


def route_of(pattern: str) -> str:
    """A URL pattern as one reads it: `api/v1/^batches/(?P<pk>[0-9a-f-]{36})/$` →
    `api/v1/batches/<pk>/`; a format suffix is `.<format>`."""
    route = re.sub(r"\\\.\(\?P<format>[^)]*\)/\?", ".<format>", pattern)
    route = route.replace("<drf_format_suffix:format>", ".<format>")
    route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"<\1>", route)
    route = re.sub(r"<\w+:(\w+)>", r"<\1>", route)
    return route.replace("^", "").replace("$", "").replace("\\.", ".")


def url_patterns() -> Iterator[tuple[str, URLPattern]]:
    """Every URL pattern of the URL map, by its route, depth first."""

    def walk(resolver: URLResolver, prefix: str) -> Iterator[tuple[str, URLPattern]]:
        for pattern in resolver.url_patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern, prefix + str(pattern.pattern))
            else:
                yield route_of(prefix + str(pattern.pattern)), pattern

    yield from walk(get_resolver(), "")


def action_key(label: str, action: str) -> str:
    return f"action {label}:{action}"


def admin_actions() -> list[str]:
    """Every action of every registered ModelAdmin (its own and the site's, `delete_selected`)."""
    return sorted(
        action_key(model._meta.label, name)
        for model, model_admin in admin.site._registry.items()
        # Django's own list of a ModelAdmin's actions, the site's included (no public API).
        for _, name, _ in model_admin._get_base_actions()  # type: ignore[attr-defined]
    )


# --- The API -------------------------------------------------------------------------------------


def _api(statuses: ByRank | frozenset[int], superuser: frozenset[int] = OK) -> Expect:
    return plain(API_ANONYMOUS, statuses, superuser)


API_SIGNED_IN = _api(OK)
API_SUPERUSER = _api(S({403}))
# A batch of the caller's tenants: any member reads it; another tenant's is not found.
API_BATCH_READ = tenanted(API_ANONYMOUS, OK, S({404}), OK)
API_BATCH_OPERATE = tenanted(API_ANONYMOUS, at_least(ROLES["operator"], PAST, S({403})), S({404}), PAST)
BATCH_BODY = {"reason": "the access matrix"}
# Submitting needs the operator role in the body's tenant; another tenant: 403.
API_SUBMIT = tenanted(API_ANONYMOUS, at_least(ROLES["operator"], PAST, S({403})), S({403}), PAST)


def _one(route: str, *checks: Check) -> list[Entry]:
    return [Entry(route, checks)]


def _batch_action(route: str, target: str) -> list[Entry]:
    check = Check("POST", API_BATCH_OPERATE, target=target, body=BATCH_BODY)
    return _one(route, check)


API_ENTRIES: list[Entry] = [
    *_one("api/v1/", Check("GET", API_SIGNED_IN)),
    Entry(
        "api/v1/audit/",
        (Check("GET", _api(at_least(ROLES["admin"], OK, S({403})))),),
    ),
    Entry(
        "api/v1/breakers/",
        (Check("GET", API_SUPERUSER),),
    ),
    Entry("api/v1/errors/", (Check("GET", API_SIGNED_IN),)),
    Entry("api/v1/alerts/", (Check("GET", API_SIGNED_IN),)),
    Entry("api/v1/config/", (Check("GET", API_SUPERUSER),)),
    Entry("api/v1/config/history/", (Check("GET", API_SUPERUSER),)),
    Entry(
        "api/v1/config/rollback/",
        (
            Check(
                "POST",
                _api(S({403}), PAST),
                body={"version": 0, "reason": "the access matrix"},
                watch="orchestrator.ConfigVersion",
            ),
        ),
    ),
    Entry(
        "api/v1/config/<key>/",
        (
            Check(
                "PUT",
                _api(S({403}), PAST),
                body={"value": 250, "reason": "the access matrix"},
                watch="orchestrator.ConfigVersion",
            ),
        ),
    ),
    Entry("api/v1/flags/", (Check("GET", API_SIGNED_IN),)),
    Entry(
        "api/v1/flags/<name>/",
        (
            Check(
                "PUT",
                _api(S({403}), PAST),
                body={"enabled": True, "reason": "the access matrix"},
                watch="orchestrator.ConfigVersion",
            ),
        ),
    ),
    *_one(
        "api/v1/batches/",
        Check("GET", API_SIGNED_IN),
        Check(
            "POST",
            API_SUBMIT,
            target="tenant",
            watch="orchestrator.Batch",
        ),
    ),
    *_one("api/v1/batches/<pk>/", Check("GET", API_BATCH_READ, target="batch")),
    *_one(
        "api/v1/batches/<pk>/history/",
        Check("GET", API_BATCH_READ, target="batch"),
    ),
    *_one(
        "api/v1/batches/<pk>/items/",
        Check("GET", API_BATCH_READ, target="batch"),
    ),
    *_one(
        "api/v1/batches/<pk>/graph/",
        Check("GET", API_BATCH_READ, target="batch"),
    ),
    *_batch_action("api/v1/batches/<pk>/cancel/", "batch"),
    *_batch_action("api/v1/batches/<pk>/retry/", "failed batch"),
    *_batch_action("api/v1/batches/<pk>/retry-items/", "batch with errors"),
    *_batch_action("api/v1/batches/<pk>/rollback/", "completed batch"),
    # Pipelines are the platform's, read by every signed-in user (their statistics over
    # the reader's tenants only); they change only by publishing.
    *_one("api/v1/pipelines/", Check("GET", API_SIGNED_IN)),
    *_one("api/v1/pipelines/<name>/", Check("GET", API_SIGNED_IN)),
    *_one("api/v1/pipelines/<name>/versions/", Check("GET", API_SIGNED_IN)),
    *_one(
        "api/v1/pipelines/<name>/versions/<version>/graph/",
        Check("GET", API_SIGNED_IN),
    ),
]

# --- Public pages, the dashboard, the admin site's own pages ------------------------------------

SITE_ENTRIES: list[Entry] = [
    Entry("favicon.ico", (Check("GET", everyone(S({301}))),)),
    Entry("api/schema/", (Check("GET", everyone(OK)),)),  # drf-spectacular: AllowAny
    Entry("api/docs/", (Check("GET", everyone(OK)),)),
    Entry("healthz", (Check("GET", everyone(OK)),)),
    # Ready or not (Kafka may be away in a test run): never refused; detail for staff only.
    Entry("readyz", (Check("GET", everyone(S({200, 503}))),)),
    # With BOS_METRICS_TOKEN set (the matrix sets it), the token alone reads the metrics.
    Entry("metrics", (Check("GET", everyone(S({401}))),)),
    Entry("dashboard/", (Check("GET", plain(REDIRECT, OK, OK)),)),
    Entry(
        "dashboard/batches/<batch_id>/graph/",
        (Check("GET", tenanted(REDIRECT, OK, S({404}), OK), target="batch"),),
    ),
    Entry("admin/bos/breakers/", (Check("GET", plain(REDIRECT, S({403}), OK)),)),
    Entry("admin/", (Check("GET", plain(REDIRECT, OK, OK)),)),
    # Signed in already: the login page sends staff to the index.
    Entry("admin/login/", (Check("GET", plain(OK, REDIRECT, REDIRECT)),)),
    Entry("admin/logout/", (Check("POST", plain(REDIRECT, OK, OK)),)),
    Entry("admin/password_change/", (Check("GET", plain(REDIRECT, OK, OK)),)),
    Entry("admin/password_change/done/", (Check("GET", plain(REDIRECT, OK, OK)),)),
    # No admin here has autocomplete fields: a request without a known field is a 403.
    Entry("admin/autocomplete/", (Check("GET", plain(REDIRECT, S({403}), S({403}))),)),
    Entry("admin/jsi18n/", (Check("GET", plain(REDIRECT, OK, OK)),)),
    # Django's "view on site": no model here has a URL of its own, so 404 whoever asks.
    Entry(
        "admin/r/<content_type_id>/<object_id>/",
        (Check("GET", tenanted(REDIRECT, S({404}), S({404}), S({404})), target="batch"),),
    ),
    Entry("admin/<app_label>/", (Check("GET", plain(REDIRECT, OK, OK)),)),
    Entry("admin/<url>", (Check("GET", plain(REDIRECT, S({404}), S({404}))),)),
]

# --- The admin's model pages and actions ---------------------------------------------------------


@dataclass(frozen=True)
class ModelRules:
    """What a registered ModelAdmin allows (orchestrator/admin.py, ScopedAdmin).

    `read`: the least role reading a tenant's rows (`tenant`: rows belong to tenants);
    `members_read`: rows of no tenant that every member reads; None and False: members
    read nothing (the platform's, or Django's own models: no Django permission counts).
    `su_add` / `su_delete`: what a superuser may add or delete (nobody else may).
    """

    tenant: bool
    read: int | None = ROLES["viewer"]
    members_read: bool = False
    su_add: bool = False
    su_delete: bool = False

    def reads(self, rank: int) -> bool:
        return self.members_read or (self.tenant and self.read is not None and rank >= self.read)


RECORD = ModelRules(tenant=True)
PLATFORM = ModelRules(tenant=False, read=None, members_read=True)
DJANGOS = ModelRules(tenant=False, read=None, su_add=True, su_delete=True)
MODELS: dict[str, ModelRules] = {
    "orchestrator.Batch": RECORD,
    "orchestrator.BatchItem": RECORD,
    "orchestrator.ItemResult": RECORD,
    "orchestrator.PhaseRun": RECORD,
    "orchestrator.StateTransition": RECORD,
    "orchestrator.BatchSnapshot": RECORD,
    "orchestrator.ChunkRun": RECORD,
    "orchestrator.WorkLease": RECORD,
    "orchestrator.DeferredTask": RECORD,
    "orchestrator.OutboxEvent": RECORD,
    "orchestrator.ProcessedEvent": RECORD,
    "orchestrator.ErrorFingerprint": RECORD,
    "orchestrator.ErrorCount": RECORD,
    "orchestrator.Alert": RECORD,
    "django_celery_results.TaskResult": RECORD,
    "orchestrator.Tenant": ModelRules(tenant=True, su_add=True),
    "orchestrator.Membership": ModelRules(tenant=True, read=ROLES["admin"], su_add=True, su_delete=True),
    "orchestrator.Pipeline": PLATFORM,
    "orchestrator.PipelineVersion": PLATFORM,
    "orchestrator.ConfigVersion": ModelRules(tenant=False, read=None, su_add=True),
    # The audit log: a tenant's admins read its records; nobody adds, changes or deletes one.
    "orchestrator.AuditRecord": ModelRules(tenant=True, read=ROLES["admin"]),
    "auth.User": DJANGOS,
    "auth.Group": DJANGOS,
    "knox.AuthToken": DJANGOS,
}
# The batch actions (permission `operate`) and the batch each needs to do something.
BATCH_ACTIONS = {
    "cancel_batches": "batch",
    "retry_batches": "failed batch",
    "retry_failed_items": "batch with errors",
    "rollback_batches": "completed batch",
}


def _admin_base(label: str) -> str:
    app, model = label.split(".")
    return f"admin/{app}/{model.lower()}/"


def _model_entries(label: str, rules: ModelRules) -> list[Entry]:
    """A model's admin pages: its list, Add (an empty form posted), an object's history,
    Delete (confirmed), change page (read) and the old-style object URL."""
    base = _admin_base(label)

    def reads(rank: int) -> frozenset[int]:
        return OK if rules.reads(rank) else S({403})

    def hidden(rank: int) -> frozenset[int]:
        # An object not among the user's rows: a redirect (as for one that does not
        # exist) when they may read the model at all, else 403.
        return REDIRECT if rules.reads(rank) else S({403})

    def history(rank: int) -> frozenset[int]:
        # Django's history page redirects before it asks for any permission.
        return OK if rules.reads(rank) else (REDIRECT if rules.tenant else S({403}))

    def on_object(own: ByRank, other: ByRank, superuser: frozenset[int]) -> Expect:
        if rules.tenant:
            return tenanted(REDIRECT, own, other, superuser)
        return plain(REDIRECT, own, superuser)  # a row of no tenant: the same for A and B

    nobody = _const(S({403}))
    deleted = REDIRECT if rules.su_delete else S({403})
    return [
        Entry(base, (Check("GET", plain(REDIRECT, reads, OK)),)),
        Entry(
            base + "add/",
            (Check("POST", plain(REDIRECT, nobody, OK if rules.su_add else S({403})), body={}, watch=label),),
        ),
        Entry(
            base + "<object_id>/history/",
            (Check("GET", on_object(history, _const(REDIRECT), OK), target=label),),
        ),
        Entry(
            base + "<object_id>/delete/",
            (
                Check(
                    "POST",
                    on_object(nobody, nobody, deleted),
                    target=label,
                    body={"post": "yes"},
                    changes=S({"superuser"} if rules.su_delete else ()),
                ),
            ),
        ),
        Entry(base + "<object_id>/change/", (Check("GET", on_object(reads, hidden, OK), target=label),)),
        # Django's old-style object URL: a redirect to the change page, for whoever asks.
        Entry(
            base + "<object_id>/",
            (Check("GET", on_object(_const(REDIRECT), _const(REDIRECT), REDIRECT), target=label),),
        ),
    ]


def _action_entries(label: str, rules: ModelRules) -> list[Entry]:
    """A model's actions posted to its list for one object: the site's `delete_selected`
    (a superuser's where they may delete) and the batch actions (operators)."""
    entries = []
    superuser = REDIRECT if rules.su_delete else ACTION_REFUSED
    if rules.tenant:
        expect = tenanted(REDIRECT, ACTION_REFUSED, ACTION_REFUSED, superuser)
    else:
        expect = plain(REDIRECT, ACTION_REFUSED, superuser)
    entries.append(
        Entry(
            action_key(label, "delete_selected"),
            (
                Check(
                    "POST",
                    expect,
                    target=label,
                    changes=frozenset({"superuser"} if rules.su_delete else set()),
                ),
            ),
        )
    )
    if label == "orchestrator.Batch":
        operators = {"operator own", "admin own", "superuser"}
        for name, target in BATCH_ACTIONS.items():
            expect = tenanted(
                REDIRECT, at_least(ROLES["operator"], REDIRECT, ACTION_REFUSED), ACTION_REFUSED, REDIRECT
            )
            entries.append(
                Entry(
                    action_key(label, name),
                    (Check("POST", expect, target=target, changes=frozenset(operators)),),
                )
            )
    return entries


ADMIN_ENTRIES: list[Entry] = [
    *(entry for label, rules in MODELS.items() for entry in _model_entries(label, rules)),
    *(entry for label, rules in MODELS.items() for entry in _action_entries(label, rules)),
    # UserAdmin's own page: setting another user's password is a superuser's.
    Entry(
        "admin/auth/user/<id>/password/",
        (Check("GET", plain(REDIRECT, S({403}), OK), target="auth.User"),),
    ),
]

ENTRIES: dict[str, Entry] = {e.key: e for e in [*API_ENTRIES, *SITE_ENTRIES, *ADMIN_ENTRIES]}
assert len(ENTRIES) == len(API_ENTRIES) + len(SITE_ENTRIES) + len(ADMIN_ENTRIES), "an entry is declared twice"
